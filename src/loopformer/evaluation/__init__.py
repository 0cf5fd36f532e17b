"""Scoring trained models (numbers) and plotting them (figures), kept apart."""
