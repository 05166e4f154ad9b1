terraform {
  # 1.11: ephemeral values and write-only arguments keep generated
  # credentials out of the state.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
  }
}
