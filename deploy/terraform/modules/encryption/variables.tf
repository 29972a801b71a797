variable "name" {
  description = "Deployment name; log groups whose name contains it may use the key."
  type        = string
}

variable "deletion_window_in_days" {
  description = "Days a deleted key can still be recovered (7 to 30)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
