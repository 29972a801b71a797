variable "zone_id" {
  description = "Route53 hosted zone id holding the names."
  type        = string
}

variable "names" {
  description = "Fully qualified names pointing at the load balancer (e.g. [\"api.example.com\"])."
  type        = list(string)
}

variable "alb_dns_name" {
  description = "The load balancer's DNS name."
  type        = string
}

variable "alb_zone_id" {
  description = "The load balancer's canonical hosted zone id."
  type        = string
}
