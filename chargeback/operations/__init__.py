"""Operations across every app (the top layer): backup and restore, the original's config.yaml
applied to the database, the open-period reminder. Nothing below imports from here."""
