output "vpc_cidr_block" {
  description = "Set as MEDIC_TRUSTED_PROXIES in the Kustomize overlay."
  value       = module.medic.vpc_cidr_block
}

output "rds_address" {
  description = "PostgreSQL host name."
  value       = module.medic.rds_address
}

output "redis_primary_endpoint" {
  description = "Redis primary endpoint (TLS)."
  value       = module.medic.redis_primary_endpoint
}

output "secret_name" {
  description = "Secrets Manager secret to complete (docs/deploy.md)."
  value       = module.medic.secret_name
}

output "secret_arn" {
  description = "ARN of the secret."
  value       = module.medic.secret_arn
}

output "external_secrets_role_arn" {
  description = "Set as eks.amazonaws.com/role-arn of the medic-external-secrets ServiceAccount in the overlay."
  value       = module.medic.external_secrets_role_arn
}

output "kms_key_arn" {
  description = "KMS key of the environment."
  value       = module.medic.kms_key_arn
}
