variable "environment" {
  description = "Environment name: the secret is medic/<environment>/secrets."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the secret."
  type        = string
}

variable "recovery_window_in_days" {
  description = "Days a deleted secret can still be restored (0 deletes at once)."
  type        = number
  default     = 30
}

variable "generated_values" {
  description = "Keys Terraform owns (DATABASE_URL, REDIS_URL). Ephemeral: written to Secrets Manager, never to the state."
  type        = map(string)
  sensitive   = true
  ephemeral   = true
}

variable "generated_values_version" {
  description = "Increase to write generated_values again (after a credential rotation); the other keys are kept."
  type        = number
}
