output "key_arn" {
  description = "The KMS key's ARN."
  value       = aws_kms_key.this.arn
}

output "key_id" {
  description = "The KMS key's id."
  value       = aws_kms_key.this.key_id
}
