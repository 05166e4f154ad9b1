# Medic dev: sizes only; everything else is in modules/medic-environment.
module "medic" {
  source = "../../modules/medic-environment"

  environment                = "dev"
  vpc_id                     = var.vpc_id
  private_subnet_ids         = var.private_subnet_ids
  eks_cluster_name           = var.eks_cluster_name
  eks_node_security_group_id = var.eks_node_security_group_id

  rds_instance_class             = "db.t3.micro"
  rds_multi_az                   = false
  rds_deletion_protection        = var.rds_deletion_protection
  redis_node_type                = "cache.t3.micro"
  redis_num_cache_clusters       = 1
  secret_recovery_window_in_days = var.secret_recovery_window_in_days
  credentials_version            = var.credentials_version
}
