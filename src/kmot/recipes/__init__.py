"""Declarative pipelines: a YAML recipe from baseline to a gated, registered model."""

from kmot.recipes.run import PipelineResult, optimize
from kmot.recipes.schema import Recipe, RecipeError, load_recipe

__all__ = ["PipelineResult", "Recipe", "RecipeError", "load_recipe", "optimize"]
