-- Orders and positions say whether they were booked on a simulated venue. Those from before were simulated exactly
-- when they are the paper venue's.
ALTER TABLE positions ADD COLUMN simulated BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE orders ADD COLUMN simulated BOOLEAN NOT NULL DEFAULT false;
UPDATE positions SET simulated = true WHERE exchange = 'paper';
UPDATE orders SET simulated = true WHERE exchange = 'paper';
