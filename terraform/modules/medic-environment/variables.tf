variable "environment" {
  description = "dev or prod. Names every resource (medic-<environment>) and the secret (medic/<environment>/secrets)."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "vpc_id" {
  description = "Existing VPC of the EKS cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Existing private subnets (two or more availability zones) for RDS and ElastiCache."
  type        = list(string)
}

variable "eks_cluster_name" {
  description = "Existing EKS cluster; its OIDC issuer is trusted by the External Secrets role."
  type        = string
}

variable "eks_node_security_group_id" {
  description = "Security group of the EKS nodes, the only source allowed to reach PostgreSQL and Redis."
  type        = string
}

variable "rds_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "rds_multi_az" {
  description = "RDS Multi-AZ standby."
  type        = bool
}

variable "rds_deletion_protection" {
  description = "RDS deletion protection."
  type        = bool
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "redis_num_cache_clusters" {
  description = "ElastiCache nodes (1, or 2+ for a replica with automatic failover)."
  type        = number
}

variable "secret_recovery_window_in_days" {
  description = "Recovery window of medic/<environment>/secrets after deletion."
  type        = number
}

variable "credentials_version" {
  description = "Increase to generate a new database password and rewrite DATABASE_URL/REDIS_URL in the secret (docs/runbook.md, \"Rotating credentials\")."
  type        = number
  default     = 1
}
