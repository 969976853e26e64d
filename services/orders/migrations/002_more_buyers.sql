-- Two more example core enterprises, for load runs with many buyers.
INSERT INTO buyers (buyer_id, name, rating) VALUES
    ('metro-transit', 'Metro Transit Authority', 'AAA'),
    ('riverside-power', 'Riverside Power Generation', 'AA')
ON CONFLICT (buyer_id) DO NOTHING;
