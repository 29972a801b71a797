terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: ECS-managed EBS volumes (volume_configuration) need >= 5.45.
      version = ">= 5.45, < 6.0"
    }
  }

  # Keep state remote and locked for a shared deployment, e.g.:
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "tollgate/example.tfstate"
  #   region       = "eu-central-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Project     = "tollgate"
      Environment = var.environment
    })
  }
}
