# medic/<env>/secrets: one JSON object holding every secret Medic reads (layout
# in docs/deploy.md). Terraform owns DATABASE_URL and REDIS_URL; operators fill
# in the other keys. Terraform writes the secret only when
# generated_values_version changes, and then keeps the operators' keys.

data "aws_region" "current" {}

locals {
  secret_name = "medic/${var.environment}/secrets"

  # Every key the ExternalSecret maps; empty until an operator sets it.
  operator_keys = [
    "MEDIC_SECRETS_KEY",
    "MEDIC_ADMIN_API_KEY",
    "MEDIC_WEBHOOK_SECRET",
    "SLACK_API_TOKEN",
    "SLACK_SIGNING_SECRET",
    "PAGERDUTY_ROUTING_KEY",
  ]
  placeholders = { for key in local.operator_keys : key => "" }
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Rotation is manual (docs/runbook.md, "Rotating credentials"): the values are Slack/PagerDuty tokens and connection URLs that need a coordinated rollout.
  name                    = local.secret_name
  description             = "Medic ${var.environment}: connection URLs and integration secrets"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.recovery_window_in_days
}

# On a rewrite (version > 1) read the current value, so keys set by operators
# survive. Ephemeral: the value is never stored.
ephemeral "aws_secretsmanager_secret_version" "current" {
  count     = var.generated_values_version > 1 ? 1 : 0
  secret_id = aws_secretsmanager_secret.this.id
}

locals {
  current_values = var.generated_values_version > 1 ? jsondecode(ephemeral.aws_secretsmanager_secret_version.current[0].secret_string) : {}
}

resource "aws_secretsmanager_secret_version" "this" {
  secret_id                = aws_secretsmanager_secret.this.id
  secret_string_wo         = jsonencode(merge(local.placeholders, local.current_values, var.generated_values))
  secret_string_wo_version = var.generated_values_version
}

data "aws_iam_policy_document" "read" {
  statement {
    sid       = "ReadMedicSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_secretsmanager_secret.this.arn]
  }

  statement {
    sid       = "DecryptThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "read" {
  name        = "medic-${var.environment}-secrets-read"
  description = "Read ${local.secret_name} (External Secrets Operator)"
  policy      = data.aws_iam_policy_document.read.json
}
