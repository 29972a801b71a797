variable "domain_name" {
  description = "The certificate's main name (e.g. api.example.com)."
  type        = string
}

variable "subject_alternative_names" {
  description = "Further names on the certificate."
  type        = list(string)
  default     = []
}

variable "zone_id" {
  description = "Route53 hosted zone receiving the DNS validation records."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
