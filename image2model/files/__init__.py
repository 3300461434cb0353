"""The data folder: paths kept inside it (storage), walking and measuring it (tree), storing
uploads (uploads), fetching results (downloads), what a killed process left (leftovers), removing
old jobs by request (maintenance) and periodically (retention).

May import: store, processes, errors, clock.
"""
