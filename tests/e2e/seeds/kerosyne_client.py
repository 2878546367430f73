import requests
import os

class KerosyneClient:
    def __init__(self, api_key):
        self.base_url = "https://api.kerosyne.trade/v1"
        self.headers = {
            "X-API-Key": api_key,
            "Content-Type": "application/json"
        }

    def get_positions(self, exchange=None):
        params = {"exchange": exchange} if exchange else {}
        response = requests.get(
            f"{self.base_url}/positions",
            headers=self.headers,
            params=params
        )
        return response.json()["positions"]

    def create_position(self, data):
        response = requests.post(
            f"{self.base_url}/positions",
            headers=self.headers,
            json=data
        )
        return response.json()["position"]

# Usage
client = KerosyneClient(os.getenv("KEROSYNE_API_KEY"))
positions = client.get_positions()
