"""The report: rows -> frontiers, equal-compute comparisons, scaling fits, plots, tables.

Modules: `load` (rows -> typed frames, seed groups), `pareto` (frontiers), `compare`
(equal-compute table, compute multiplier), `scaling` (saturating power-law fits), `plots`,
`tables`, `summary` (generated findings) and `cli` (`benchbench-report`).
"""
