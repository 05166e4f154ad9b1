output "vpc_cidr_block" {
  description = "VPC CIDR: MEDIC_TRUSTED_PROXIES in the Kustomize overlay (ALB source addresses, NetworkPolicy)."
  value       = data.aws_vpc.this.cidr_block
}

output "rds_address" {
  description = "PostgreSQL host name."
  value       = module.rds.address
}

output "rds_security_group_id" {
  description = "Security group of the PostgreSQL instance."
  value       = module.rds.security_group_id
}

output "redis_primary_endpoint" {
  description = "Redis primary endpoint (TLS)."
  value       = module.elasticache.primary_endpoint_address
}

output "redis_security_group_id" {
  description = "Security group of the Redis replication group."
  value       = module.elasticache.security_group_id
}

output "secret_name" {
  description = "Secrets Manager secret to fill in (docs/deploy.md)."
  value       = module.secrets.secret_name
}

output "secret_arn" {
  description = "ARN of medic/<environment>/secrets."
  value       = module.secrets.secret_arn
}

output "external_secrets_role_arn" {
  description = "Annotation eks.amazonaws.com/role-arn of the medic-external-secrets ServiceAccount (k8s overlay)."
  value       = module.external_secrets_role.role_arn
}

output "kms_key_arn" {
  description = "KMS key of the environment."
  value       = aws_kms_key.this.arn
}
