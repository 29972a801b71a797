output "urls" {
  description = "The gateway's public HTTPS addresses."
  value       = [for n in module.dns.fqdns : "https://${n}"]
}

output "alb_dns_name" {
  description = "The ALB's own DNS name."
  value       = module.alb.dns_name
}

output "admin_api" {
  description = "The Admin API address, reachable from admin_cidrs inside the VPC only."
  value       = "http://gateway.${module.cluster.namespace_name}:8001"
}

output "cluster_name" {
  description = "The ECS cluster."
  value       = module.cluster.cluster_name
}

output "service_name" {
  description = "The gateway's ECS service (null with rollouts = tollgate-ecs)."
  value       = module.gateway.service_name
}

output "tollgate_ecs" {
  description = "What a tollgate-ecs deployment file needs when it owns the service (rollouts = tollgate-ecs)."
  value = {
    region                 = var.region
    cluster                = module.cluster.cluster_name
    task_family            = module.gateway.task_definition_family
    execution_role_arn     = module.gateway.execution_role_arn
    subnets                = module.network.private_subnet_ids
    security_groups        = [module.gateway.security_group_id]
    target_group_arn       = module.alb.target_group_arn
    discovery_service_arn  = module.gateway.discovery_service_arn
    log_group              = module.logs.name
    migrations_task_family = module.gateway.migrations_task_family
  }
}

output "migrations_task_definition_arn" {
  description = "The one-off migrations task definition."
  value       = module.gateway.migrations_task_definition_arn
}

output "private_subnet_ids" {
  description = "Subnets of the tasks (for RunTask of the migrations by hand or by tollgate-ecs)."
  value       = module.network.private_subnet_ids
}

output "task_security_group_id" {
  description = "The gateway tasks' security group."
  value       = module.gateway.security_group_id
}

output "log_group" {
  description = "The containers' CloudWatch log group."
  value       = module.logs.name
}

output "database_address" {
  description = "RDS endpoint (null with the Cassandra datastore)."
  value       = local.use_postgres ? module.postgres[0].address : null
}

output "database_secret_arn" {
  description = "Secrets Manager secret of the database master credentials (null with Cassandra)."
  value       = local.use_postgres ? module.postgres[0].master_user_secret_arn : null
}

output "nat_public_ips" {
  description = "Source addresses upstream services see."
  value       = module.network.nat_public_ips
}
