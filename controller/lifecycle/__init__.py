"""Lifecycle commands through the EC2 API and tags, never SSH: find, list, status, extend,
stop/start/hibernate/terminate, config, connect. Only instances tagged spawn:managed=true."""
