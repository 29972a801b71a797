# One customer-managed KMS key for the deployment's data at rest: log groups, the database,
# its master-password secret, Performance Insights and Cassandra's EBS volumes. The key
# policy delegates to IAM (account root) and lets CloudWatch Logs use it for this
# deployment's log groups only.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:a key policy's Resource "*" is the key itself; the root statement is AWS's default key policy (delegation to IAM)
  #checkov:skip=CKV_AWS_111:a key policy's Resource "*" is the key itself; the root statement is AWS's default key policy (delegation to IAM)
  #checkov:skip=CKV_AWS_356:a key policy's Resource "*" is the key itself, not every resource of the account
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogs"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account}:log-group:*${var.name}*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: logs, database, secrets and volumes"
  enable_key_rotation     = true
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}
