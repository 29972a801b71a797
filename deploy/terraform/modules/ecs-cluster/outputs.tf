# The cluster is usable (RunTask, services with a capacity provider strategy) only once its
# capacity providers are associated, hence the depends_on.
output "cluster_arn" {
  description = "The ECS cluster's ARN."
  value       = aws_ecs_cluster.this.arn
  depends_on  = [aws_ecs_cluster_capacity_providers.this]
}

output "cluster_name" {
  description = "The ECS cluster's name."
  value       = aws_ecs_cluster.this.name
  depends_on  = [aws_ecs_cluster_capacity_providers.this]
}

output "namespace_id" {
  description = "The Cloud Map namespace's id."
  value       = aws_service_discovery_private_dns_namespace.this.id
}

output "namespace_name" {
  description = "The Cloud Map namespace's DNS name."
  value       = aws_service_discovery_private_dns_namespace.this.name
}

output "ec2_capacity_provider" {
  description = "Name of the EC2 capacity provider (null without enable_ec2_capacity)."
  value       = var.enable_ec2_capacity ? aws_ecs_capacity_provider.ec2[0].name : null
  depends_on  = [aws_ecs_cluster_capacity_providers.this]
}
