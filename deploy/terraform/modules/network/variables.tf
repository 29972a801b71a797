variable "name" {
  description = "Name prefix of every resource (e.g. tollgate-prod)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's IPv4 CIDR block."
  type        = string
}

variable "azs" {
  description = "Availability zones, one public and one private subnet in each (three for high availability)."
  type        = list(string)
  validation {
    condition     = length(var.azs) >= 2
    error_message = "At least two availability zones are needed for a highly available deployment."
  }
}

variable "public_subnet_cidrs" {
  description = "One CIDR per zone, in the order of azs, for the public subnets (load balancer, NAT gateways)."
  type        = list(string)
}

variable "private_subnet_cidrs" {
  description = "One CIDR per zone, in the order of azs, for the private subnets (tasks, database)."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, but a zone failure cuts every private subnet off the internet)."
  type        = bool
  default     = false
}

variable "flow_log_retention_days" {
  description = "Retention of the VPC flow log group, in days."
  type        = number
  default     = 365
}

variable "kms_key_arn" {
  description = "KMS key encrypting the flow log group."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
