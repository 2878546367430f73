# List positions
curl -X GET https://api.kerosyne.trade/v1/positions \
  -H "X-API-Key: your_api_key" \
  -H "Content-Type: application/json"

# Create position
curl -X POST https://api.kerosyne.trade/v1/positions \
  -H "X-API-Key: your_api_key" \
  -H "Content-Type: application/json" \
  -d '{"exchange":"binance","symbol":"BTC/USDT","side":"long","entry_price":45000,"quantity":0.5}'
