# Redis 7 for Medic's shared rate limiter: TLS in transit (required), AUTH
# token, encrypted at rest, no snapshots (the data is a few seconds of
# counters; losing it only resets rate-limit windows).

resource "aws_elasticache_subnet_group" "this" {
  name        = var.name
  description = "Medic Redis (${var.name}) private subnets"
  subnet_ids  = var.subnet_ids
}

resource "aws_security_group" "this" {
  name        = "${var.name}-redis"
  description = "Medic Redis: 6379 from the EKS nodes only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_eks_nodes" {
  security_group_id            = aws_security_group.this.id
  description                  = "Redis from the EKS node security group"
  referenced_security_group_id = var.allowed_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

# AWS generates the AUTH token. The provider has no write-only variant of
# auth_token, so the token is kept in the (encrypted) state; ignore_changes
# pins the value chosen at creation (this data source returns a new one on
# every read). Rotation: docs/runbook.md, "Rotating credentials".
data "aws_secretsmanager_random_password" "auth_token" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50:Automatic failover follows num_cache_clusters: on in prod (2 nodes), off in dev (1 node of disposable rate-limit counters).
  replication_group_id = var.name
  description          = "Medic rate limiter (${var.name})"

  engine               = "redis"
  engine_version       = "7.1"
  parameter_group_name = "default.redis7"
  node_type            = var.node_type
  port                 = 6379

  num_cache_clusters         = var.num_cache_clusters
  automatic_failover_enabled = var.num_cache_clusters > 1
  multi_az_enabled           = var.num_cache_clusters > 1

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.this.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = data.aws_secretsmanager_random_password.auth_token.random_password

  #checkov:skip=CKV_AWS_134:Rate-limit counters are disposable; snapshots are deliberately off.
  snapshot_retention_limit = 0

  auto_minor_version_upgrade = true
  maintenance_window         = "sun:05:30-sun:06:30"

  lifecycle {
    ignore_changes = [auth_token]
  }
}
