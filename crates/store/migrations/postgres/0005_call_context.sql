-- What the agent typed about the technician and the site (customer, site,
-- equipment, subscription, last similar incident), as JSON.
ALTER TABLE calls ADD COLUMN context TEXT;
