"""preprocess"""
