"""Developer and CI tools that sit beside the product (never imported by it)."""
