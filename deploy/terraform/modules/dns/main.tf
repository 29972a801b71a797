# Public names for the gateway: A aliases to the load balancer. Route53 answers alias
# queries itself (no TTL, no charge) and, with evaluate_target_health, stops answering
# when the ALB has no healthy target.

resource "aws_route53_record" "alias" {
  for_each = toset(var.names)

  zone_id = var.zone_id
  name    = each.key
  type    = "A"

  alias {
    name                   = var.alb_dns_name
    zone_id                = var.alb_zone_id
    evaluate_target_health = true
  }
}
