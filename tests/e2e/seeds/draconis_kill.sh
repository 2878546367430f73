curl -X POST https://alphadraconis.io/api/v1/b2b/risk/kill \
-H "X-API-Key: ad_b2b_your_key_here" \
-H "Content-Type: application/json" \
-d '{"account_id": "uuid", "action": "CLOSE_ALL"}'
