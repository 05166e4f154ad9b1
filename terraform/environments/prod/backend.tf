# State in S3 (versioned, encrypted bucket of the prod account), locked with
# DynamoDB. Both exist before the first init: docs/deploy.md, "Prerequisites".
terraform {
  backend "s3" {
    bucket         = "medic-terraform-state-222222222222"
    key            = "medic/prod/terraform.tfstate"
    region         = "us-east-1"
    dynamodb_table = "medic-terraform-locks"
    encrypt        = true
  }
}
