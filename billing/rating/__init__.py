"""On-premises usage rated into charges: effective-dated rates, free allowances and named subsidies.

Cloud providers deliver FOCUS files; a site's own cluster and storage deliver usage (Slurm's sacct,
quota reports). This package turns that usage into FOCUS rows priced by the site's rates and feeds
them to the normal ingest, so validation, flags, supersede and statements behave exactly as for any
imported file.

- `units.py`: the units rates are quoted in, and month arithmetic (fiscal years, effective months).
- `models.py`: Rate, Subsidy, UsageFile (a stored usage file and the import holding its charges),
  Rerate (the log of re-ratings), ChargeRating and ChargeSubsidy (how each rated or subsidised charge
  was worked out, for statements and subsidy caps).
- `slurm.py`, `storage.py`: reading sacct output and quota reports into usage per resource (vectorised).
- `pricing.py`: rates, free allowances and subsidies applied to usage (exact decimals).
- `subsidies.py`: the subsidy rules (order, scope, caps per fiscal year), shared by rating and ingest.
- `focus.py`: rated usage as a FOCUS 1.2 CSV.
- `services.py`, `selectors.py`, `admin.py`: writes, reads and admin screens, as in every app.
"""
