provider "aws" {
  region = var.aws_region

  # Refuse to run against any other account than the dev one.
  allowed_account_ids = [var.aws_account_id]

  default_tags {
    tags = {
      Project     = "medic"
      Environment = "dev"
      ManagedBy   = "terraform"
    }
  }
}
