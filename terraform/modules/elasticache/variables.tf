variable "name" {
  description = "Replication group id and prefix of its companion resources, e.g. medic-dev."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the EKS cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the cache subnet group."
  type        = list(string)
}

variable "allowed_security_group_id" {
  description = "Security group allowed to connect on 6379: the EKS node security group."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for encryption at rest."
  type        = string
}

variable "node_type" {
  description = "Cache node type."
  type        = string
  default     = "cache.t3.micro"
}

variable "num_cache_clusters" {
  description = "Nodes in the replication group: 1 (dev) or 2+ (prod: a replica in another zone with automatic failover)."
  type        = number
  default     = 1

  validation {
    condition     = var.num_cache_clusters >= 1 && var.num_cache_clusters <= 6
    error_message = "num_cache_clusters must be between 1 and 6."
  }
}
