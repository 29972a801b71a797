output "contact_points" {
  description = "DNS names for Tollgate's cassandra_contact_points (the seed and the members)."
  value       = ["cassandra-seed.${var.namespace_name}", "cassandra.${var.namespace_name}"]
}

output "datacenter" {
  description = "The ring's data center name."
  value       = var.datacenter
}

output "security_group_id" {
  description = "The nodes' security group."
  value       = aws_security_group.cassandra.id
}

output "ready" {
  description = "Known once both services are stable (for ordering the gateway's migrations after the ring)."
  value       = "${aws_ecs_service.seed.id},${aws_ecs_service.members.id}"
}
