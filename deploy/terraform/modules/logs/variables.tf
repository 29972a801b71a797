variable "name" {
  description = "Log group name (e.g. /ecs/tollgate-prod); it must contain the deployment name for the KMS key policy."
  type        = string
}

variable "retention_in_days" {
  description = "Days log events are kept (a CloudWatch retention value: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, ...)."
  type        = number
  default     = 365
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.retention_in_days)
    error_message = "retention_in_days must be one of the values CloudWatch Logs accepts."
  }
}

variable "kms_key_arn" {
  description = "KMS key encrypting the log events."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
