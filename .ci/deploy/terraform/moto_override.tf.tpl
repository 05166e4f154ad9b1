# TEST ONLY. Copied next to an environment's configuration by
# .ci/validate-deploy (never present in terraform/): keeps the state local and
# points every AWS API the configuration uses at a local moto_server.
terraform {
  backend "local" {}
}

provider "aws" {
  region     = "us-east-1"
  access_key = "test"
  secret_key = "test"

  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    ec2            = "@ENDPOINT@"
    eks            = "@ENDPOINT@"
    elasticache    = "@ENDPOINT@"
    iam            = "@ENDPOINT@"
    kms            = "@ENDPOINT@"
    rds            = "@ENDPOINT@"
    secretsmanager = "@ENDPOINT@"
    sts            = "@ENDPOINT@"
  }
}
