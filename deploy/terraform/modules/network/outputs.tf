output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The VPC's CIDR block."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnet ids, in the order of azs."
  value       = [for az in var.azs : aws_subnet.public[az].id]
}

output "private_subnet_ids" {
  description = "Private subnet ids, in the order of azs."
  value       = [for az in var.azs : aws_subnet.private[az].id]
}

output "nat_public_ips" {
  description = "The NAT gateways' public addresses (what upstreams see as the gateway's source address)."
  value       = [for eip in aws_eip.nat : eip.public_ip]
}
