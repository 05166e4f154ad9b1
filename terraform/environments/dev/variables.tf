variable "aws_region" {
  description = "Region of the EKS cluster."
  type        = string
  default     = "us-east-1"
}

variable "aws_account_id" {
  description = "The dev AWS account; the provider refuses any other."
  type        = string
}

variable "vpc_id" {
  description = "Existing VPC of the EKS cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Existing private subnets for RDS and ElastiCache (two or more zones)."
  type        = list(string)
}

variable "eks_cluster_name" {
  description = "Existing EKS cluster."
  type        = string
}

variable "eks_node_security_group_id" {
  description = "Security group of the EKS nodes."
  type        = string
}

variable "rds_deletion_protection" {
  description = "RDS deletion protection; turn off only to retire the environment."
  type        = bool
  default     = false
}

variable "secret_recovery_window_in_days" {
  description = "Recovery window of medic/dev/secrets after deletion."
  type        = number
  default     = 7
}

variable "credentials_version" {
  description = "Increase to rotate the database password and rewrite DATABASE_URL/REDIS_URL."
  type        = number
  default     = 1
}
