"""Trust across clusters: each cluster's identity setup (profile) and who trusts whom (matrix)."""
