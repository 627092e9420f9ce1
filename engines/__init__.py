"""facecloak.engines"""
