"""facecloak.export"""
