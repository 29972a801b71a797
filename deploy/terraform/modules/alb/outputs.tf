output "security_group_id" {
  description = "The ALB's security group (allowed into the tasks' proxy and status ports)."
  value       = aws_security_group.alb.id
}

output "dns_name" {
  description = "The ALB's DNS name."
  value       = aws_lb.this.dns_name
}

output "zone_id" {
  description = "The ALB's canonical hosted zone id (for Route53 aliases)."
  value       = aws_lb.this.zone_id
}

output "target_group_arn" {
  description = "Target group the gateway service registers its tasks in."
  value       = aws_lb_target_group.proxy.arn
}

output "listener_arn" {
  description = "The HTTPS listener (the gateway service waits for it before registering)."
  value       = aws_lb_listener.https.arn
}

output "arn_suffix" {
  description = "The ALB's ARN suffix (CloudWatch metrics dimension)."
  value       = aws_lb.this.arn_suffix
}

output "access_log_bucket" {
  description = "S3 bucket receiving the access logs."
  value       = aws_s3_bucket.logs.id
}
