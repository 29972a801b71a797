# The log group every container writes to through the awslogs driver (streams are created by
# the driver: <prefix>/<container>/<task id>), with a retention and KMS encryption (the
# seed's group kept logs forever, unencrypted).

resource "aws_cloudwatch_log_group" "this" {
  name              = var.name
  retention_in_days = var.retention_in_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}
