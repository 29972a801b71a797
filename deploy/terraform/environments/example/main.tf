# Example root module: one region, three availability zones, a highly available Tollgate
# cluster on ECS behind an HTTPS ALB, PostgreSQL on RDS (or Cassandra on ECS).
#
#   clients ──HTTPS──▶ ALB (public subnets, ACM cert) ──HTTP :8000──▶ gateway tasks (private)
#                       └─ health check: GET /status/ready on :8007 (never the Admin API)
#   VPC-internal operators ──▶ gateway.<namespace>:8001 (Admin API, security group: admin_cidrs)
#   gateway tasks ──TLS :5432──▶ RDS PostgreSQL (Multi-AZ)   [or :9042 ▶ Cassandra on ECS]
#
# See deploy/README.md for the full procedure.

locals {
  name = "tollgate-${var.environment}"
  azs  = var.azs

  use_postgres  = var.datastore == "postgres"
  use_cassandra = var.datastore == "cassandra"

  public_names = [for n in var.public_hostnames : "${n}.${var.domain_name}"]

  # Datastore settings for every Tollgate container, as TOLLGATE_<kong.conf key>.
  postgres_environment = local.use_postgres ? {
    TOLLGATE_DATABASE    = "postgres"
    TOLLGATE_PG_HOST     = module.postgres[0].address
    TOLLGATE_PG_PORT     = tostring(module.postgres[0].port)
    TOLLGATE_PG_DATABASE = module.postgres[0].database
    TOLLGATE_PG_USER     = module.postgres[0].username
    TOLLGATE_PG_SSL      = "on" # the server refuses plain connections (rds.force_ssl)
  } : {}
  cassandra_environment = local.use_cassandra ? {
    TOLLGATE_DATABASE                    = "cassandra"
    TOLLGATE_CASSANDRA_CONTACT_POINTS    = join(",", module.cassandra[0].contact_points)
    TOLLGATE_CASSANDRA_REPL_STRATEGY     = "NetworkTopologyStrategy"
    TOLLGATE_CASSANDRA_DATA_CENTERS      = "${module.cassandra[0].datacenter}:3"
    TOLLGATE_CASSANDRA_LOCAL_DATACENTER  = module.cassandra[0].datacenter
    TOLLGATE_CASSANDRA_WRITE_CONSISTENCY = "LOCAL_QUORUM"
    TOLLGATE_CASSANDRA_READ_CONSISTENCY  = "LOCAL_QUORUM"
  } : {}
}

module "encryption" {
  source = "../../modules/encryption"
  name   = local.name
}

module "network" {
  source = "../../modules/network"

  name                 = local.name
  cidr_block           = var.vpc_cidr
  azs                  = local.azs
  public_subnet_cidrs  = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_subnet_cidrs = [for i in range(3) : cidrsubnet(var.vpc_cidr, 4, i + 1)]
  single_nat_gateway   = var.single_nat_gateway
  kms_key_arn          = module.encryption.key_arn
}

module "logs" {
  source = "../../modules/logs"

  name              = "/ecs/${local.name}"
  retention_in_days = var.log_retention_days
  kms_key_arn       = module.encryption.key_arn
}

module "cluster" {
  source = "../../modules/ecs-cluster"

  name                = local.name
  vpc_id              = module.network.vpc_id
  private_subnet_ids  = module.network.private_subnet_ids
  namespace           = var.discovery_namespace
  enable_ec2_capacity = var.enable_ec2_capacity
  ec2_instance_type   = var.ec2_instance_type
  ec2_architecture    = var.cpu_architecture == "ARM64" ? "arm64" : "x86_64"
}

module "certificate" {
  source = "../../modules/certificate"

  domain_name               = local.public_names[0]
  subject_alternative_names = slice(local.public_names, 1, length(local.public_names))
  zone_id                   = var.route53_zone_id
}

module "alb" {
  source = "../../modules/alb"

  name                     = local.name
  vpc_id                   = module.network.vpc_id
  public_subnet_ids        = module.network.public_subnet_ids
  certificate_arn          = module.certificate.certificate_arn
  ingress_cidrs            = var.client_cidrs
  target_security_group_id = module.gateway.security_group_id
  deletion_protection      = var.deletion_protection
  web_acl_arn              = var.web_acl_arn
}

module "dns" {
  source = "../../modules/dns"

  zone_id      = var.route53_zone_id
  names        = local.public_names
  alb_dns_name = module.alb.dns_name
  alb_zone_id  = module.alb.zone_id
}

module "postgres" {
  source = "../../modules/postgres"
  count  = local.use_postgres ? 1 : 0

  name                      = local.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.gateway.security_group_id]
  kms_key_arn               = module.encryption.key_arn
  instance_class            = var.db_instance_class
  multi_az                  = var.db_multi_az
  deletion_protection       = var.deletion_protection
}

module "cassandra" {
  source = "../../modules/cassandra"
  count  = local.use_cassandra ? 1 : 0

  name                      = local.name
  cluster_arn               = module.cluster.cluster_arn
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.gateway.security_group_id]
  namespace_id              = module.cluster.namespace_id
  namespace_name            = module.cluster.namespace_name
  log_group_name            = module.logs.name
  log_group_arn             = module.logs.arn
  kms_key_arn               = module.encryption.key_arn
}

module "gateway" {
  source = "../../modules/gateway"

  name               = local.name
  image              = var.image
  ecr_repository_arn = var.ecr_repository_arn
  cluster_arn        = module.cluster.cluster_arn
  cluster_name       = module.cluster.cluster_name
  cpu_architecture   = var.cpu_architecture
  compatibilities    = var.enable_ec2_capacity ? ["FARGATE", "EC2"] : ["FARGATE"]
  capacity_provider_strategy = [{
    capacity_provider = var.enable_ec2_capacity ? module.cluster.ec2_capacity_provider : "FARGATE"
    weight            = 1
    base              = 0
  }]
  cpu           = var.gateway_cpu
  memory        = var.gateway_memory
  desired_count = var.gateway_count
  min_count     = var.gateway_count
  max_count     = var.gateway_max_count

  vpc_id                = module.network.vpc_id
  vpc_cidr              = module.network.vpc_cidr
  subnet_ids            = module.network.private_subnet_ids
  alb_security_group_id = module.alb.security_group_id
  target_group_arn      = module.alb.target_group_arn
  listener_arn          = module.alb.listener_arn
  admin_cidrs           = coalescelist(var.admin_cidrs, [module.network.vpc_cidr])
  admin_auth            = var.admin_auth

  environment = merge(local.postgres_environment, local.cassandra_environment, var.gateway_environment)
  secrets = local.use_postgres ? {
    TOLLGATE_PG_PASSWORD = "${module.postgres[0].master_user_secret_arn}:password::"
  } : {}
  secret_arns  = local.use_postgres ? [module.postgres[0].master_user_secret_arn] : []
  kms_key_arns = [module.encryption.key_arn]

  log_group_name          = module.logs.name
  log_group_arn           = module.logs.arn
  namespace_id            = module.cluster.namespace_id
  manage_service          = var.rollouts == "terraform"
  run_migrations_on_apply = var.run_migrations_on_apply
  datastore_ready         = local.use_cassandra ? module.cassandra[0].ready : ""
}
