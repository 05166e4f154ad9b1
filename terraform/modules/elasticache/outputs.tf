output "primary_endpoint_address" {
  description = "Host name of the primary node."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Redis port (TLS)."
  value       = aws_elasticache_replication_group.this.port
}

output "auth_token" {
  description = "AUTH token chosen at creation."
  value       = aws_elasticache_replication_group.this.auth_token
  sensitive   = true
}

output "security_group_id" {
  description = "Security group of the replication group."
  value       = aws_security_group.this.id
}
