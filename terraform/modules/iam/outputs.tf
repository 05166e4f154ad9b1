output "role_arn" {
  description = "Role ARN for the eks.amazonaws.com/role-arn annotation of the medic-external-secrets ServiceAccount."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "Role name."
  value       = aws_iam_role.this.name
}
