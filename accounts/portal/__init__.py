"""The PI portal (the top layer): what a PI and their delegates see of statements and charges.

Identity (users, roles, invitations, preferences) stays below in `accounts`; the portal reads
billing and statements, and nothing below imports from here."""
