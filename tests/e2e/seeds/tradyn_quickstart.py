import requests

API_KEY = "tk_live_a1b2c3d4e5f6"
BASE_URL = "http://127.0.0.1:8080/v1"
headers = {"Authorization": f"Bearer {API_KEY}"}

# Get account info
account = requests.get(
    f"{BASE_URL}/api/account", headers=headers
).json()

print(f"Balance: {account['data']['balance']}")
print(f"Equity: {account['data']['equity']}")

# Get open positions
positions = requests.get(
    f"{BASE_URL}/api/positions", headers=headers
).json()

for pos in positions["data"]:
    print(f" {pos['symbol']} {pos['type']} {pos['volume']} lots P&L: {pos['profit']}")

# Place a market buy
order = requests.post(f"{BASE_URL}/api/trade", headers=headers, json={
    "symbol": "EURUSD",
    "action": "buy",
    "volume": 0.10,
    "sl": 1.0800,
    "tp": 1.0950
}).json()

print(f"Filled ticket #{order['data']['ticket']} @ {order['data']['price']}")
