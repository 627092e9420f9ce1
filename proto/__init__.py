"""facecloak.proto"""
