output "fqdns" {
  description = "The names created."
  value       = distinct([for r in aws_route53_record.alias : r.fqdn])
}
