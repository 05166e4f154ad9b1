# Medic prod: sizes only; everything else is in modules/medic-environment.
module "medic" {
  source = "../../modules/medic-environment"

  environment                = "prod"
  vpc_id                     = var.vpc_id
  private_subnet_ids         = var.private_subnet_ids
  eks_cluster_name           = var.eks_cluster_name
  eks_node_security_group_id = var.eks_node_security_group_id

  rds_instance_class             = "db.t4g.medium"
  rds_multi_az                   = true
  rds_deletion_protection        = var.rds_deletion_protection
  redis_node_type                = "cache.t4g.small"
  redis_num_cache_clusters       = 2
  secret_recovery_window_in_days = var.secret_recovery_window_in_days
  credentials_version            = var.credentials_version
}
