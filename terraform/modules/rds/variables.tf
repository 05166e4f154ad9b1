variable "name" {
  description = "Identifier of the instance and prefix of its companion resources, e.g. medic-dev."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the EKS cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (at least two availability zones) for the DB subnet group."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "allowed_security_group_id" {
  description = "Security group allowed to connect on 5432: the EKS node security group."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for storage, Performance Insights and log encryption."
  type        = string
}

variable "instance_class" {
  description = "Instance class; the parameter group is sized from it (see locals.instance_memory_mib)."
  type        = string
  default     = "db.t3.micro"
}

variable "engine_version" {
  description = "PostgreSQL major version; AWS applies minor versions automatically."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.engine_version))
    error_message = "Medic runs on PostgreSQL 15."
  }
}

variable "multi_az" {
  description = "Standby replica in a second availability zone (prod: true)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (prod: true)."
  type        = bool
  default     = true
}

variable "allocated_storage_gb" {
  description = "Initial gp3 storage."
  type        = number
  default     = 20
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling."
  type        = number
  default     = 100
}

variable "backup_retention_days" {
  description = "Automated backup (point-in-time recovery) retention."
  type        = number
  default     = 7
}

variable "database_name" {
  description = "Database created on the instance."
  type        = string
  default     = "medic"
}

variable "master_username" {
  description = "Master user name."
  type        = string
  default     = "medic"
}

variable "master_password" {
  description = "Master password. Ephemeral: sent to AWS once per master_password_version, never stored in the state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "master_password_version" {
  description = "Increase to send a new master_password to AWS."
  type        = number
}
