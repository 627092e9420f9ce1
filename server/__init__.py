"""facecloak.server"""
