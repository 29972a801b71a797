output "service_name" {
  description = "The ECS service's name (null when tollgate-ecs owns the service)."
  value       = var.manage_service ? aws_ecs_service.gateway[0].name : null
}

output "task_definition_arn" {
  description = "The gateway task definition revision the service runs."
  value       = aws_ecs_task_definition.gateway.arn
}

output "migrations_task_definition_arn" {
  description = "The migrations task definition (run it with RunTask before rolling a new version)."
  value       = aws_ecs_task_definition.migrations.arn
}

output "security_group_id" {
  description = "The tasks' security group (the database admits it)."
  value       = aws_security_group.task.id
}

output "execution_role_arn" {
  description = "The tasks' execution role."
  value       = aws_iam_role.execution.arn
}

output "discovery_service_arn" {
  description = "The Cloud Map service the tasks register in."
  value       = aws_service_discovery_service.gateway.arn
}

output "task_definition_family" {
  description = "Family of the gateway task definition (tollgate-ecs registers its revisions in it)."
  value       = aws_ecs_task_definition.gateway.family
}

output "migrations_task_family" {
  description = "Family of the migrations task definition."
  value       = aws_ecs_task_definition.migrations.family
}
