"""facecloak.clients"""
