output "secret_name" {
  description = "Name of the secret (medic/<env>/secrets)."
  value       = aws_secretsmanager_secret.this.name
}

output "secret_arn" {
  description = "ARN of the secret."
  value       = aws_secretsmanager_secret.this.arn
}

output "read_policy_arn" {
  description = "IAM policy allowing GetSecretValue and DescribeSecret on the secret only."
  value       = aws_iam_policy.read.arn
}
